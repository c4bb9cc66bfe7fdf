# Sourced by the scripts that test another build of the CPU kernels (sanitize_cpu.sh, other_builds.sh), from the
# repository root: a copy of the package under a build directory, built with the given variables, and a check that
# Python, started in that directory, loads the copy's extension and not the installed one.

# build_copy DIR [VAR=value ...]: copies the package into DIR and builds its CPU kernels there (log: DIR/build.log).
build_copy() {
  local dir=$1
  shift
  mkdir -p "$dir"
  # A fresh copy each run; cp -p keeps the sources' times, so ninja recompiles only what changed since the last run.
  rm -rf "$dir/interpgan_ext" "$dir/csrc" "$dir/tests" "$dir/python"
  mkdir -p "$dir/python"
  cp -rp interpgan_ext csrc tests setup.py pyproject.toml "$dir/"
  cp -rp python/examples "$dir/python/"
  rm -f "$dir"/interpgan_ext/_C*.so
  (cd "$dir" && env INTERPGAN_SKIP_CUDA=1 INTERPGAN_REQUIRE_EXT=1 MAX_JOBS="${MAX_JOBS:-2}" "$@" \
    python setup.py build_ext --inplace > build.log 2>&1) || { tail -30 "$dir/build.log"; return 1; }
}

# check_copy_loads LABEL [VECTOR_CODE]: in the copy's directory, with PYTHONPATH=$PWD, its extension is the one
# imported, and its CPU vector code (interpgan_ext.info()["ext_cpu_vector_code"]) starts with VECTOR_CODE if given.
check_copy_loads() {
  LABEL=$1 VECTOR_CODE=${2:-} python - <<'PYEOF'
import os
import interpgan_ext as ig
from interpgan_ext import _backend
assert _backend.has_extension(), f"the copy's extension did not load: {_backend.unavailable_reason}"
so = os.path.realpath(_backend._C.__file__)
assert so.startswith(os.getcwd()), f"loaded {so}, not the build in {os.getcwd()}"
code = ig.info().get("ext_cpu_vector_code")
assert code.startswith(os.environ["VECTOR_CODE"]), f"the copy runs {code}, not {os.environ['VECTOR_CODE']} code"
print(f"{os.environ['LABEL']}: testing {so} ({code})")
PYEOF
}

# tests/verl need verl 0.9.1 and run in their own environment (`make verl-test`, .venv-verl);
# the main suite (.venv, where verl is not installed) does not collect them. (The directory
# tests/verl itself would satisfy a bare find_spec("verl") as a namespace package: require a
# real package, which has an origin.)
import importlib.util

_verl = importlib.util.find_spec("verl")
collect_ignore = [] if _verl is not None and _verl.origin is not None else ["verl"]

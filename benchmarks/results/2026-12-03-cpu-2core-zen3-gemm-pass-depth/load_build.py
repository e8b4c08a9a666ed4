"""The `_cpu` module of an rnnfast build, for the scripts of this folder that load several builds
side by side in one process: folder/rnnfast/_cpu*.so, under its own module object."""

import glob
import importlib.util


def load(folder, threads):
    """folder's _cpu module, set to `threads` threads."""
    path = glob.glob(f"{folder}/rnnfast/_cpu*.so")[0]
    spec = importlib.util.spec_from_file_location("_cpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.set_num_threads(threads)
    return module

"""The environment every notebook runs in under test (and when its outputs are stored).

CPU only, one thread, fast scale, progress bars off (their text holds timings), one fixed
hash seed.
The root conftest.py applies it to the pytest process, whose kernels inherit it; scripts/execute.py
applies it before storing outputs, so stored and re-computed outputs come from the same setup.
"""
NB_ENV = {
    "TC_SCALE": "fast",
    "TC_PROGRESS": "0",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONHASHSEED": "0",
    # One thread: a parallel reduction splits its sum by thread count, so training losses
    # differ bitwise between 1 and 2 threads after a few steps. Pinning it makes stored
    # outputs reproduce on any machine, whatever its number of cores.
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    # Idle OpenMP threads sleep instead of spinning. Results are unchanged (same threads, same
    # work split); on a loaded machine training loops ran 9x faster with it (99 s -> 11 s).
    "OMP_WAIT_POLICY": "PASSIVE",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
}

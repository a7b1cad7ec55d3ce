"""What machine a benchmark ran on (every table names it: numbers from another CPU, BLAS build
or thread count are not comparable)."""

from __future__ import annotations

import datetime
import os
import platform

__all__ = ["machine"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return ",".join(f for f in ("avx2", "fma", "avx512f") if f in have)
    except OSError:
        pass
    return ""


def machine() -> dict:
    """Date, CPU, cores, SIMD flags, NumPy and its BLAS, onnxruntime, graphnet's thread count."""
    import numpy as np

    blas = ""
    try:
        from threadpoolctl import threadpool_info

        info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if info:
            i = info[0]
            blas = f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')} kernels)"
    except Exception:  # threadpoolctl missing: the table just does not name the BLAS
        pass
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "not installed"
    from graphnet.runtime.fast.threads import WORKERS

    return {
        "date": datetime.date.today().isoformat(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "simd": _flags(),
        "numpy": np.__version__,
        "blas": blas,
        "onnxruntime": ort,
        "graphnet_threads": WORKERS,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }

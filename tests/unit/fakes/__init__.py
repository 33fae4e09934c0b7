"""Test doubles for the GPU readers: a fake ``pynvml`` module and a fake ``nvidia-smi``.

No machine that runs these tests has a GPU, so the NVML and nvidia-smi paths are exercised
only against these doubles. Their outputs copy the shape of real ones (nvidia-smi 5xx drivers,
nvidia-ml-py 12/13); they are not recordings from a device.
"""

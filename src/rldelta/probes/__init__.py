"""Probes: run models on task prompts and measure one thing about them. Each module is one probe."""


class ProbeError(ValueError):
    """Input a probe cannot use (not a run or model folder, runs that do not match, tensors that differ), with a
    one-line reason naming the file or tensor."""

"""Measuring candidates: the job description, the isolated worker process, the decode benchmark,
memory-bandwidth roofline, NVML readings, and the typed results."""

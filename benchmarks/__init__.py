"""Speed, memory and load benchmarks of the screening service: `python -m benchmarks.run [--quick]`."""

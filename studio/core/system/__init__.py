"""The machine and the install: where files live (paths, the HF cache), GPU and RAM telemetry, the OS lock on
a folder, quieting library output, the units every number is shown in, and the offline demo model."""

"""What a build is asked to do, in plain data: recipe settings, target devices, the build host, model
sources, and YAML diagnostics. pydantic + PyYAML only: importing it never imports torch."""

"""The container entrypoint: environment to torchrun, signal forwarding, one exit code for the launch."""

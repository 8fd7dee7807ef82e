"""The application layer: one module per command, composing the library for the CLI, benches and experiments."""

"""The `brushpen` command: one small module per capability, each calling service functions."""

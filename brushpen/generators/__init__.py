"""Serving: one service function per action (generate images, ...), shared by the CLI, API and UI."""

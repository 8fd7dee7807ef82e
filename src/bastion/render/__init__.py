"""Rendering: Markdown summaries, the HTML report and its figures. The only place numbers are rounded for people."""

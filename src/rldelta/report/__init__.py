"""Presentation: terminal tables, plots and the HTML report. Computes nothing new."""

"""Figures and the PDF stationarity report (reads only run directories)."""

"""The report: `document.py` reads run records, tables and the store into one Markdown document
with its CSVs; `figures.py` draws its plots."""

"""The audit: datasets, metrics, one image's audit, the resumable run, the summary and the
HTML report. ``report_html`` renders from data (``store``, ``summary``) and never imports the run.
"""

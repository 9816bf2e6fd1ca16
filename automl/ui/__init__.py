"""What people see: the live progress board, the trials table, the HTML report, the
dashboard and the trial artifacts it shows. Only this package and :mod:`automl.cli`
print; the rest of ``automl`` emits events or returns results for them to render.
"""

"""JupyterLab + Playwright fixtures (filled in by the browser work)."""

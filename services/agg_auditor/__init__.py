"""The auditor CLI (``aggregator audit``): tools that read the journal for auditors."""

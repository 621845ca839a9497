"""The fleet page: many hosts' JSON reports (reports.py) on one HTML page (page.py), `pgbackup-verify fleet`."""

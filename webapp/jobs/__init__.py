"""Background jobs: the Huey queue (queue.py), its worker command (cli.py). Tasks live with their features."""

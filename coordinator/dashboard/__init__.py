"""The dashboard: one static page (HTML, JS, CSS, no build step) served at `GET /`."""

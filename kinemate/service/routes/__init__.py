"""The routes of the service, one router per concern: jobs (the API), service (health and
limits) and pages (the web page and the offline API reference)."""

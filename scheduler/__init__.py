"""The scheduler: maps cron schedules and new-data arrival to the jobs' entry points."""

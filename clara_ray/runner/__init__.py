"""Running a job: one Ray task per operator, owned by the job's run in the runner host actor."""

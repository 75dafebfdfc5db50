"""Running a job: one Ray task per operator, owned by a runner actor per job."""

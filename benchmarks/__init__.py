"""`make bench`: each benchmark runs our side and the peer it is compared with, in one run."""

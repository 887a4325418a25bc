"""A seeded fault soak (issue 16 §1): a generated workload through the five services as processes on their own
NATS JetStream and PostgreSQL, once clean and once under faults chosen by the seed; the two must agree to the cent.

`python -m soak --runs N --seed S` (`make soak RUNS=N SEED=S`)."""

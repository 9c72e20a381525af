"""Developer tools run by make targets, not by the tests: `mutation_report` (make mutate)."""

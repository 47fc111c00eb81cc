"""AML: velocity windows in Redis, rules as data, sanctions screening."""

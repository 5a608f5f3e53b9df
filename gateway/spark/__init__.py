"""Apache Spark through Spark Connect: an executor for queries past one machine."""

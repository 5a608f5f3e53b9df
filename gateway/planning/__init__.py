"""Planning: client SQL text -> governed DuckDB SQL, one small step at a time."""

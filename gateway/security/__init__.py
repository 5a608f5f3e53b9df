"""Who is asking: users and password hashes, login and tokens, the principal."""

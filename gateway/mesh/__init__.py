"""Mesh mode: domain nodes, federation of fragments across them, partitions and tickets."""

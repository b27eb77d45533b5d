"""The collector's database: the tables, the engine, migrations and daily partitions."""

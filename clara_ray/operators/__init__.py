"""Built-in operators: plain, typed functions a pipeline names by import path."""

"""The mapping sheet: YAML in, validated pydantic models out, compiled to functions."""

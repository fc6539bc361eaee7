"""querylens: where fashion search does well and where it fails, as a Spark batch job."""

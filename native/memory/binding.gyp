{
  "targets": [
    {
      "target_name": "memory",
      "sources": ["src/memory.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror"]
    }
  ]
}

{
  "targets": [
    {
      "target_name": "hugepages",
      "sources": ["src/hugepages.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror"]
    }
  ]
}

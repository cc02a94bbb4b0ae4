module github.com/servalproxy/serval

go 1.26

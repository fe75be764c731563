"""What the tests share: processes and namespaces to start (harness, netns), rank programs, recorded fixtures."""

from rlphf_cli.cli import main

main()

from polyrelay.cli import main

main()

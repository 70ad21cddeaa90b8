from starfish.cli import main

main()

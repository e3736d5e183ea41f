from ssehub.cli import main

main()

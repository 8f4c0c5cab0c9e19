from wabus_cli.main import main

main()

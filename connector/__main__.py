from connector.service import main

main()

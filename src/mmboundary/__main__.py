from mmboundary.cli import main

main()

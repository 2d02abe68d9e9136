from etwsensor.cli import main

main()

from seqcollector.cli import main

main()

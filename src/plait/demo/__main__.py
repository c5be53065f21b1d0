from plait.demo.single import main

raise SystemExit(main())

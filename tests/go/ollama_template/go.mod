module finetunestudio/ollamatemplate

go 1.19
